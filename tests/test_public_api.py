"""The public API: ``ktos.__all__`` names what a TRL user imports, lazily, and the library never imports the study."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import ktos


def test_every_public_name_resolves_to_its_object() -> None:
    from ktos.config import KTOSConfig
    from ktos.losses import kto_loss
    from ktos.trainer import KTOSTrainer

    assert {"KTOSConfig", "KTOSTrainer", "kto_loss", "KLProbe", "load_feedback", "class_weights"} <= set(ktos.__all__)
    assert (ktos.KTOSConfig, ktos.KTOSTrainer, ktos.kto_loss) == (KTOSConfig, KTOSTrainer, kto_loss)
    assert ktos.__version__ == metadata.version("ktos")
    for name in set(ktos.__all__) - {"__version__"}:  # defined in ktos, documented, named as it is exported
        obj = getattr(ktos, name)
        assert obj.__module__.startswith("ktos."), (name, obj.__module__)
        assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
        assert getattr(obj, "__name__", name) == name, (name, obj.__name__)


def test_import_ktos_loads_neither_torch_nor_trl() -> None:
    code = "import sys, ktos; print(ktos.__all__ and 'torch' in sys.modules, 'trl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"], out
