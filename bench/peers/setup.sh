#!/usr/bin/env bash
# Build the virtual environments of the peer tools of the benchmark (issue 6).
#
#   bash bench/peers/setup.sh [--force] [sdv] [smartnoise] [mostlyai]
#
# Each peer gets its own venv under bench/.peers/<tool>/ (git-ignored), because
# smartnoise-synth pins an old Opacus (0.14) that must not share an environment
# with anything else. A venv that finished building (marker file .complete) is
# skipped on a re-run; --force rebuilds it. With no tool named, all three are built.
#
# In every venv PyTorch is installed FIRST and exactly as `torch==2.13.0`: the
# CPU wheel of that release is on this machine's disk (pip's find-links), so no
# multi-GB CUDA build is downloaded. Later installs run with a constraint file
# that holds torch at 2.13.0, so no dependency can move it.
#
# Versions:
#   sdv        : latest SDV (2.x) on Python 3.11 + torch 2.13.0 CPU.
#   smartnoise : smartnoise-synth 1.0.8 (Requires-Python >=3.10,<3.15; needs
#                opacus>=0.14,<0.15, mbi>=1.1,<2, pac-synth 0.0.8,
#                smartnoise-sql>=1.0.10). opacus 0.14.0 itself only asks for
#                torch>=1.3, so it installs beside torch 2.13.0 on Python 3.11
#                (the only Python for which the local torch wheel exists).
#                snsynth imports `packaging` without declaring it: installed here.
#   mostlyai   : mostlyai-engine 2.7.3 (Apache-2.0; TabularARGN, DP-SGD through
#                Opacus >= 1.6). Requires-Python >=3.11,<3.14 and, in its own
#                metadata, torch>=2.13.0,<2.14.0: the pin below satisfies it, so
#                no other torch is fetched. It also declares torchvision 0.28
#                (needs torch==2.13.0 exactly) and torchaudio 2.11 (torch>=2.11):
#                both install from PyPI beside the CPU torch without moving it.
#                PyPI's torchvision is built against the CUDA torch and does not
#                import beside this one ('operator torchvision::nms does not
#                exist'); `import mostlyai.engine` imports transformers, which
#                imports any torchvision it finds, so the import fails. Neither
#                TabularARGN nor its LSTM language path uses torchvision: it is
#                uninstalled after the install (post_install_for), and the smoke
#                test checks the engine imports and torchvision stays away.
#
# Each venv gets versions.json (python, torch and the tool's key packages, plus
# the full pip freeze).
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PEERS="$REPO/bench/.peers"
TORCH_PIN="torch==2.13.0"

FORCE=0
TOOLS=()
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    sdv|smartnoise|mostlyai) TOOLS+=("$arg") ;;
    -h|--help) sed -n 2,39p "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (expected --force, sdv, smartnoise, mostlyai)" >&2; exit 2 ;;
  esac
done
[ ${#TOOLS[@]} -eq 0 ] && TOOLS=(sdv smartnoise mostlyai)

find_python311() {
  if [ -n "${PEER_PYTHON:-}" ]; then echo "$PEER_PYTHON"; return 0; fi
  local c
  for c in python3.11 /root/.pyenv/versions/3.11*/bin/python3.11 /usr/bin/python3.11 /usr/local/bin/python3.11; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

PY="$(find_python311)" || { echo "setup.sh: FAILED: no Python 3.11 found (the local torch 2.13.0 CPU wheel is cp311); set PEER_PYTHON" >&2; exit 1; }

fail() {  # tool, step
  echo "" >&2
  echo "setup.sh: FAILED [$1] at step: $2 (venv left incomplete at $PEERS/$1; re-run to retry)" >&2
  return 1
}

# Packages per tool (installed after torch, under the torch constraint).
packages_for() {
  case "$1" in
    sdv) echo "sdv pandas numpy" ;;
    smartnoise) echo "smartnoise-synth==1.0.8 opacus==0.14.0 mbi>=1.1.0,<2 packaging pandas numpy" ;;  # packaging: imported by snsynth, not declared
    mostlyai) echo "mostlyai-engine==2.7.3 pandas numpy" ;;
  esac
}

# Steps after the install (what and why: see the header).
post_install_for() {
  case "$1" in
    mostlyai) echo "uninstall -y torchvision" ;;
  esac
}

# A short import-and-touch test that the venv is usable.
smoke_for() {
  case "$1" in
    sdv) echo "import sdv, torch, pandas, numpy; from sdv.single_table import GaussianCopulaSynthesizer, CTGANSynthesizer, TVAESynthesizer; from sdv.metadata import Metadata; print('sdv', sdv.__version__, 'torch', torch.__version__)" ;;
    smartnoise) echo "import torch, opacus, snsynth, mbi; from snsynth import Synthesizer; from snsynth.transform import TableTransformer, BinTransformer, MinMaxTransformer, LabelTransformer, OneHotEncoder, ChainTransformer; import snsynth.aim, snsynth.mst.mst, snsynth.pytorch.nn.dpctgan, snsynth.pytorch.nn.patectgan; print('opacus', opacus.__version__, 'torch', torch.__version__)" ;;
    mostlyai) echo "import sys, torch, opacus; from mostlyai.engine import TabularARGN; from mostlyai.engine.domain import DifferentialPrivacyConfig, ModelEncodingType, RareCategoryReplacementMethod; import mostlyai.engine._tabular.training, mostlyai.engine._tabular.generation; assert 'torchvision' not in sys.modules, 'the tabular engine imported torchvision'; import mostlyai.engine as me; print('mostlyai-engine', me.__version__, 'opacus', opacus.__version__, 'torch', torch.__version__)" ;;
  esac
}

# Distributions whose versions go into versions.json's "key" section.
key_packages_for() {
  case "$1" in
    sdv) echo "sdv ctgan rdt copulas sdmetrics torch numpy pandas scikit-learn scipy" ;;
    smartnoise) echo "smartnoise-synth smartnoise-sql opacus mbi jax jaxlib opendp pac-synth torch numpy pandas scipy" ;;
    mostlyai) echo "mostlyai-engine opacus torch torchvision torchaudio transformers datasets pyarrow numpy pandas scikit-learn" ;;
  esac
}

build() {
  local tool="$1" dir="$PEERS/$1"
  if [ -f "$dir/.complete" ] && [ "$FORCE" -eq 0 ]; then
    echo "== [$tool] already built ($dir); skipping (use --force to rebuild)"
    return 0
  fi
  echo "== [$tool] building venv in $dir with $PY"
  rm -rf "$dir"
  mkdir -p "$PEERS"
  "$PY" -m venv "$dir" || { fail "$tool" "python -m venv"; return 1; }
  local pip="$dir/bin/pip" py="$dir/bin/python"

  # torch first, exactly this pin (CPU wheel on disk).
  "$pip" install "$TORCH_PIN" || { fail "$tool" "pip install $TORCH_PIN"; return 1; }
  if ! "$py" -c 'import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith("2.13.0") and torch.version.cuda is None else 1)'; then
    fail "$tool" "torch check (expected 2.13.0 CPU build, got $("$py" -c 'import torch; print(torch.__version__, torch.version.cuda)'))"; return 1
  fi
  # Hold torch where it is for everything that follows.
  printf '%s\n' "$TORCH_PIN" > "$dir/torch-constraint.txt"

  # shellcheck disable=SC2046
  "$pip" install -c "$dir/torch-constraint.txt" $(packages_for "$tool") \
    || { fail "$tool" "pip install $(packages_for "$tool")"; return 1; }

  local post
  post="$(post_install_for "$tool")"
  if [ -n "$post" ]; then
    # shellcheck disable=SC2086
    "$pip" $post || { fail "$tool" "pip $post"; return 1; }
  fi

  "$py" -c "$(smoke_for "$tool")" || { fail "$tool" "import smoke test"; return 1; }

  "$py" - "$tool" "$dir/versions.json" $(key_packages_for "$tool") <<'EOF' || { fail "$tool" "write versions.json"; return 1; }
import json, os, platform, subprocess, sys
from importlib import metadata
tool, out, *keys = sys.argv[1:]
key = {}
for k in keys:
    try:
        key[k] = metadata.version(k)
    except metadata.PackageNotFoundError:
        key[k] = None
import torch
freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True).stdout.split()
doc = {"tool": tool, "python": platform.python_version(), "python_executable": sys.executable,
       "torch": torch.__version__, "torch_cuda": torch.version.cuda, "key": key, "pip_freeze": freeze}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=1)
os.replace(tmp, out)
print(json.dumps({"tool": tool, "python": doc["python"], **key}))
EOF
  touch "$dir/.complete"
  echo "== [$tool] done: $dir"
}

status=0
for t in "${TOOLS[@]}"; do
  build "$t" || status=1
done
if [ "$status" -ne 0 ]; then
  echo "setup.sh: at least one peer venv FAILED to build (see messages above)" >&2
fi
exit "$status"
