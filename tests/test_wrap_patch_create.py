"""Patch(create=True) for names a dependency removed, and patches on modules that replace themselves
in sys.modules while they execute (transformers' _LazyModule does)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from lever_plugins.errors import UpstreamError
from lever_plugins.wrap import Patch, patched


def test_create_adds_a_missing_name_and_removes_it_again(monkeypatch: pytest.MonkeyPatch):
    mod = types.ModuleType("lever_test_gone")
    mod.kept = 1
    monkeypatch.setitem(sys.modules, "lever_test_gone", mod)
    seen = []

    def make(original):
        seen.append(original)
        return "shim"

    with pytest.raises(UpstreamError, match="lever_test_gone:Removed"):
        with patched([Patch("lever_test_gone:Removed", make)]):
            pass
    assert seen == []
    with patched([Patch("lever_test_gone:Removed", make, create=True), Patch("lever_test_gone:kept", make, True)]):
        assert mod.Removed == "shim" and mod.kept == "shim"
    assert seen == [None, 1]  # make() sees None only where the name is missing
    assert not hasattr(mod, "Removed") and mod.kept == 1


def test_on_import_patch_lands_on_the_module_that_replaced_itself(tmp_path: Path):
    (tmp_path / "swapper.py").write_text(
        textwrap.dedent(
            """
            import sys, types
            _real = types.ModuleType(__name__)
            _real.value = 1
            sys.modules[__name__] = _real
            """
        )
    )
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from lever_plugins.wrap.patching import Patch, install_on_import
        applied = install_on_import([Patch("swapper:added", lambda o: "yes", create=True)])
        from swapper import added, value
        print(added, value, len(applied))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["yes", "1", "1"]
