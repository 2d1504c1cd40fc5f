"""The embedded default: a toy task that runs offline on a laptop CPU, with no download.

It imports the library (:mod:`ktos`); the library never imports it.

* :mod:`~ktos.toy.task`: the synthetic feedback data, pretraining corpus and held-out problems (``ktos synth-data``);
* :mod:`~ktos.toy.tiny`: the character-level tokenizer and the tiny Llama decoder, built offline;
* :mod:`~ktos.toy.pretrain`: the base model of any size, pretrained on CPU or GPU (``ktos pretrain-base``);
* :mod:`~ktos.toy.quality`: task accuracy on the held-out problems and preference accuracy.
"""
