"""The public API: ``ktos.__all__`` names what a TRL user imports, lazily, and the library never imports the study."""

from __future__ import annotations

import subprocess
import sys

import ktos


def test_every_public_name_resolves_to_its_object() -> None:
    from ktos.config import KTOSConfig
    from ktos.losses import kto_loss
    from ktos.trainer import KTOSTrainer

    assert {"KTOSConfig", "KTOSTrainer", "kto_loss", "KLProbe", "load_feedback", "class_weights"} <= set(ktos.__all__)
    assert (ktos.KTOSConfig, ktos.KTOSTrainer, ktos.kto_loss) == (KTOSConfig, KTOSTrainer, kto_loss)
    for name in ktos.__all__:
        assert getattr(ktos, name) is not None, name


def test_import_ktos_loads_neither_torch_nor_trl() -> None:
    code = "import sys, ktos; print(ktos.__all__ and 'torch' in sys.modules, 'trl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"], out
