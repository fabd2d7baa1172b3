"""Run the suite over the host matrix: host-independent tests once, host tests once per ComfyUI host.

A Python process can import only one ComfyUI, so each host gets its own pytest process with ``COMFYUI_PATH`` set.
Hosts come from ``COMFYUI_PATHS`` (``os.pathsep``-separated), else ``COMFYUI_PATH``, else both pinned trees beside
the checkout (``../shared/comfyui`` = v0.3.64 and ``../shared/comfyui-0.8.0`` = v0.8.0). Extra arguments go to every
pytest run (``-x``, ``-k name``, a test file). Exit status: 0 only when every run passed and none was empty.

    python tests/run_matrix.py [pytest args...]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOSTS = ("../shared/comfyui", "../shared/comfyui-0.8.0")
NO_TESTS = 5  # pytest's exit status when it collected nothing


def matrix_hosts() -> list[Path]:
    """The hosts to test, resolved against the repository root (a relative path means beside the checkout)."""
    listed = os.environ.get("COMFYUI_PATHS")
    if listed:
        names = [p for p in listed.split(os.pathsep) if p.strip()]
    elif os.environ.get("COMFYUI_PATH"):
        names = [os.environ["COMFYUI_PATH"]]
    else:
        names = list(DEFAULT_HOSTS)
    return [(ROOT / Path(n).expanduser()).resolve() for n in names]


def host_version(root: Path) -> str:
    text = (root / "comfyui_version.py").read_text() if (root / "comfyui_version.py").is_file() else ""
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    return found.group(1) if found else "unknown version"


def run_pytest(label: str, marker: str, env: dict, args: list[str]) -> tuple[int, str, float]:
    """One pytest process; its output streams through; returns (status, summary line, seconds)."""
    print(f"\n=== {label} ===", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-m", marker, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    summary = ""
    for line in proc.stdout:
        sys.stdout.write(line)
        if re.search(r"\b(passed|failed|error|errors|skipped|deselected|no tests ran)\b.* in [0-9.]+s", line):
            summary = line.strip().strip("=").strip()
    status = proc.wait()
    return status, summary, time.monotonic() - start


def main(args: list[str]) -> int:
    hosts = matrix_hosts()
    missing = [h for h in hosts if not (h / "main.py").is_file()]
    if missing:
        print(f"run_matrix: no ComfyUI at {', '.join(map(str, missing))}: set COMFYUI_PATHS to your hosts "
              f"(separated by '{os.pathsep}')", file=sys.stderr)
        return 2
    runs = [("host-independent tests", "not comfy", {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"})]
    for host in hosts:
        runs.append((f"host tests on ComfyUI {host_version(host)} ({host.name})", "comfy",
                     {**os.environ, "COMFYUI_PATH": str(host)}))
    results = []
    for label, marker, env in runs:
        status, summary, seconds = run_pytest(label, marker, env, args)
        results.append((label, status, summary, seconds))
    print("\n=== host matrix ===")
    failed = False
    for label, status, summary, seconds in results:
        ok = status == 0
        failed |= not ok
        why = " (collected no tests)" if status == NO_TESTS else ""
        print(f"{'ok  ' if ok else 'FAIL'} {label}: {summary or 'no summary'}{why} [{seconds:.0f} s]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
