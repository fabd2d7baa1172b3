"""Make the registry's torchvision/torchaudio wheels importable next to a CPU-only torch.

The torchvision and torchaudio wheels on the package index are CUDA builds. Their compiled
extensions cannot load against a CPU build of torch, and then:

* ``import torchvision`` fails, because ``torchvision/_meta_registrations.py`` registers fake
  kernels for ``torchvision::nms``/``qnms`` unconditionally, and those operators do not exist.
  The fix guards those registrations with ``torchvision.extension._has_ops()``, as the file already
  does for its other operators.
* ``import torchvision.io``/``torchaudio`` fail while loading ``torchaudio/lib/*.so``.
  The fix removes those libraries; the pure-Python parts the host uses keep working.

Run with the interpreter of the environment to patch. Each fix is applied only when the matching
import fails, so running the script again is a fast no-op. It never touches the network.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

MARKER = "# patched by .ci/fix_torchvision_cpu.py"
GUARD = f'''

{MARKER}: fake kernels only where torchvision's compiled operators exist.
def _register_fake_if_ops(op_name):
    def wrapper(fn):
        if torchvision.extension._has_ops():
            return torch.library.register_fake(op_name)(fn)
        return fn

    return wrapper
'''


def imports_cleanly(module: str) -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False)
    lines = proc.stderr.strip().splitlines()
    return proc.returncode == 0, lines[-1] if lines else ""


def site_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(p) for p in dict.fromkeys((paths["purelib"], paths["platlib"]))]


def find_package(name: str) -> Path | None:
    for root in site_dirs():
        if (root / name / "__init__.py").is_file():
            return root / name
    return None


def fix_torchvision() -> None:
    pkg = find_package("torchvision")
    if pkg is None:
        print("fix_torchvision_cpu: torchvision not installed, nothing to do")
        return
    ok, _ = imports_cleanly("torchvision")
    if ok:
        print("fix_torchvision_cpu: torchvision imports, nothing to do")
        return
    meta = pkg / "_meta_registrations.py"
    text = meta.read_text()
    if MARKER not in text:
        anchor = "import torchvision.extension  # noqa: F401\n"
        if anchor not in text:
            raise SystemExit(f"fix_torchvision_cpu: unexpected layout of {meta}; cannot patch")
        text = text.replace(anchor, anchor + GUARD, 1)
        text, count = re.subn(r"^@torch\.library\.register_fake\(", "@_register_fake_if_ops(", text, flags=re.MULTILINE)
        meta.write_text(text)
        print(f"fix_torchvision_cpu: guarded {count} fake-kernel registrations in {meta.name}")
    ok, err = imports_cleanly("torchvision")
    if not ok:
        raise SystemExit(f"fix_torchvision_cpu: torchvision still fails to import: {err}")


def fix_torchaudio() -> None:
    pkg = find_package("torchaudio")
    if pkg is None:
        print("fix_torchvision_cpu: torchaudio not installed, nothing to do")
        return
    ok, _ = imports_cleanly("torchaudio")
    if ok:
        print("fix_torchvision_cpu: torchaudio imports, nothing to do")
        return
    removed = sorted((pkg / "lib").glob("*.so"))
    for lib in removed:
        lib.unlink()
    print(f"fix_torchvision_cpu: removed {len(removed)} CUDA-built libraries from torchaudio/lib")
    ok, err = imports_cleanly("torchaudio")
    if not ok:
        raise SystemExit(f"fix_torchvision_cpu: torchaudio still fails to import: {err}")


def main() -> None:
    fix_torchvision()
    fix_torchaudio()


if __name__ == "__main__":
    main()
