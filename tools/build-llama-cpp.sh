#!/usr/bin/env bash
# Build llama.cpp's own tools (llama-server, llama-batched-bench) from the llama.cpp source that
# ships inside the llama-cpp-python sdist, pinned to the installed llama-cpp-python version.
# Built once and cached outside the work tree; prints the bin directory on its last line.
#
#   tools/build-llama-cpp.sh [PYTHON]      # PYTHON defaults to .venv/bin/python
#
# Exit 3 (and a one-line reason on stderr) when no C/C++ compiler or cmake is available.
set -euo pipefail

PY="${1:-${PYTHON:-.venv/bin/python}}"
TARGETS=(llama-server llama-batched-bench)

VERSION="$("$PY" -c 'from importlib.metadata import version; print(version("llama-cpp-python"))' 2>/dev/null)" || {
  echo "build-llama-cpp: llama-cpp-python is not installed in $PY (pip install 'specalign[local]')" >&2; exit 3; }
for tool in cmake cc c++; do
  command -v "$tool" >/dev/null || { echo "build-llama-cpp: no $tool on PATH: cannot build llama.cpp" >&2; exit 3; }
done

CACHE="${SPECALIGN_LLAMA_CPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/specalign/llama.cpp}"
# built for this CPU (-DGGML_NATIVE): the cache key names the CPU's feature flags too
CPU="$( (grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m) | cksum | cut -d' ' -f1)"
DEST="$CACHE/$VERSION-$CPU"
BIN="$DEST/bin"
have_all() { for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || return 1; done; }
if have_all; then echo "$BIN"; exit 0; fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9                                     # two builds at once: the second waits, then finds the binaries
if have_all; then echo "$BIN"; exit 0; fi

WORK="$(mktemp -d "$CACHE/build-$VERSION.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "build-llama-cpp: fetching the llama-cpp-python $VERSION sdist" >&2
"$PY" -m pip download -q --no-deps --no-binary llama-cpp-python \
  "llama-cpp-python==$VERSION" -d "$WORK/sdist" 2>/dev/null >&2 \
  || "$PY" - "$VERSION" "$WORK/sdist" >&2 <<'PYEOF'
# pip could not fetch the sdist (no build backend for its metadata?): ask PyPI's JSON API
import json, pathlib, sys, urllib.request
version, out = sys.argv[1], pathlib.Path(sys.argv[2])
meta = json.load(urllib.request.urlopen(f"https://pypi.org/pypi/llama-cpp-python/{version}/json", timeout=60))
url = next(u["url"] for u in meta["urls"] if u["packagetype"] == "sdist")
out.mkdir(parents=True, exist_ok=True)
urllib.request.urlretrieve(url, out / url.rsplit("/", 1)[1])
PYEOF
SDIST=""
for f in "$WORK"/sdist/*.tar.gz; do [ -f "$f" ] && SDIST="$f"; done
[ -n "$SDIST" ] || { echo "build-llama-cpp: could not fetch the llama-cpp-python $VERSION sdist" >&2; exit 1; }
tar -xzf "$SDIST" -C "$WORK"
SRC=""
for d in "$WORK"/*/vendor/llama.cpp; do [ -f "$d/CMakeLists.txt" ] && SRC="$d"; done
[ -n "$SRC" ] || { echo "build-llama-cpp: no vendor/llama.cpp inside $SDIST" >&2; exit 1; }

JOBS="$(nproc 2>/dev/null || echo 2)"
echo "build-llama-cpp: building ${TARGETS[*]} from $SRC ($JOBS jobs, a few minutes)" >&2
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DGGML_NATIVE=ON >"$WORK/cmake.log" 2>&1 || { tail -n 30 "$WORK/cmake.log" >&2; exit 1; }
cmake --build "$WORK/build" --config Release -j "$JOBS" --target "${TARGETS[@]}" >"$WORK/build.log" 2>&1 \
  || { tail -n 40 "$WORK/build.log" >&2; exit 1; }
mkdir -p "$DEST.tmp/bin"
for t in "${TARGETS[@]}"; do cp "$WORK/build/bin/$t" "$DEST.tmp/bin/"; done
echo "$VERSION" >"$DEST.tmp/VERSION"
rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
echo "$BIN"
