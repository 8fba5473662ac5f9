#!/usr/bin/env bash
# Run the device_tests suite on aarch64 under user-mode emulation (qemu-user).
#
# Proves that the aarch64 wheels of edgerec[runtime] (numpy, ai-edge-litert,
# onnxruntime, flatbuffers + edgerec's own wheel) install for CPython 3.11 and
# reproduce the bundle's reference outputs on an ARM CPU (Cortex-A72, the
# Raspberry Pi 4 core). Recipe: docs/toolchain.md, aarch64 section.
#
# Usage:
#   device_tests/emulate-aarch64.sh [BUNDLE] [-- EXTRA_PYTEST_ARGS...]
#   device_tests/emulate-aarch64.sh --setup-only     # only prepare the cache
#   device_tests/emulate-aarch64.sh --clean          # delete the cache
#
#   BUNDLE   defaults to build/device-bundle (`make device-bundle` builds it).
#
# Environment:
#   EDGEREC_AARCH64_CACHE  cache folder (default build/aarch64): armroot/ (Debian
#                          arm64 python3.11 + libs), site/ (aarch64 wheels),
#                          edgerec-site/ (edgerec's wheel, rebuilt every run)
#   PY                     host python with pip (default .venv/bin/python)
#   QEMU_CPU               emulated core: cortex-a72 (default; Raspberry Pi 4) or
#                          cortex-a76 (Raspberry Pi 5: dot-product and fp16 kernels)
#   LATENCY_RUNS           recommend() calls per latency series (default 30;
#                          emulated latency is meaningless, only parity counts)
#
# Needs root (apt-get, `unshare -m` + bind mount of a fake /proc/cpuinfo: under
# qemu both onnxruntime and LiteRT's XNNPACK otherwise parse the host's x86
# cpuinfo and segfault on their first session/interpreter). The first run
# downloads ~13 MB of .debs and ~55 MB of wheels (~40 s); later runs reuse
# build/aarch64 and only rebuild edgerec's wheel (~15-40 s in all).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${EDGEREC_AARCH64_CACHE:-$ROOT/build/aarch64}
PY=${PY:-$ROOT/.venv/bin/python}
QEMU_CPU=${QEMU_CPU:-cortex-a72}
LATENCY_RUNS=${LATENCY_RUNS:-30}
ARMROOT=$CACHE/armroot
SITE=$CACHE/site
EDGEREC_SITE=$CACHE/edgerec-site
WHEELS=$CACHE/wheels
PLATFORMS=(--platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64
           --platform manylinux2014_aarch64 --platform linux_aarch64)
# Third-party wheels of the [runtime] extra (pins as in pyproject.toml) + pytest.
REQUIREMENTS=("numpy>=1.26,<3" "ai-edge-litert>=2.3,<2.4" "onnxruntime>=1.32,<1.33"
              "flatbuffers>=24.3" "tqdm>=4.66,<5" "pytest>=8,<10")
# Debian bookworm arm64: the interpreter, its stdlib and the shared libraries
# that python3.11 and the native wheels (libstdc++ for LiteRT/ORT) link against.
DEBS=(python3.11 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
      libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libssl3 libsqlite3-0
      libbz2-1.0 liblzma5 libzstd1 libncursesw6 libtinfo6 libreadline8 libuuid1
      libcrypt1 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3
      libkrb5support0 libcom-err2 libkeyutils1 libdb5.3 libgdbm6 libgdbm-compat4)

BUNDLE=build/device-bundle
SETUP_ONLY=0
EXTRA=()
while (($#)); do
    case $1 in
        --setup-only) SETUP_ONLY=1 ;;
        --clean) rm -rf "$CACHE"; echo "removed $CACHE"; exit 0 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) BUNDLE=$1 ;;
    esac
    shift
done

log() { printf '\033[1m[emulate-aarch64 %3ds]\033[0m %s\n' "$SECONDS" "$*" >&2; }
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "needs root (apt-get, unshare -m) or sudo" >&2; exit 2; }
    SUDO=(sudo)
fi
mkdir -p "$CACHE"

# --- 1. qemu-user-static -------------------------------------------------------------
if ! command -v qemu-aarch64-static >/dev/null; then
    log "installing qemu-user-static"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
fi

# --- 2. arm64 python3.11 root (apt-get download + dpkg -x, no debootstrap) -----------
if [[ ! -f $ARMROOT/.complete ]]; then
    log "fetching arm64 python3.11 and ${#DEBS[@]} packages into $ARMROOT"
    added_arch=0
    cleanup_arch() {
        if ((added_arch)); then
            "${SUDO[@]}" dpkg --remove-architecture arm64 || true
            "${SUDO[@]}" apt-get update -qq || true
        fi
    }
    trap cleanup_arch EXIT
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        "${SUDO[@]}" dpkg --add-architecture arm64
        added_arch=1
    fi
    "${SUDO[@]}" apt-get update -qq
    rm -rf "$CACHE/debs" "$ARMROOT"
    mkdir -p "$CACHE/debs" "$ARMROOT"
    (cd "$CACHE/debs" && apt-get download -qq "${DEBS[@]/%/:arm64}")
    for deb in "$CACHE"/debs/*.deb; do dpkg -x "$deb" "$ARMROOT"; done
    cleanup_arch
    added_arch=0
    trap - EXIT
    touch "$ARMROOT/.complete"
fi
ARMPY=$ARMROOT/usr/bin/python3.11

# --- 3. aarch64 wheels of the [runtime] extra ------------------------------------------
stamp=$(printf '%s\n' "${REQUIREMENTS[@]}" "${PLATFORMS[@]}" | sha256sum | cut -c1-16)
if [[ ! -f $SITE/.stamp-$stamp ]]; then
    log "downloading aarch64 cp311 wheels: ${REQUIREMENTS[*]}"
    mkdir -p "$WHEELS"
    pipargs=(--only-binary=:all: "${PLATFORMS[@]}" --python-version 3.11
             --implementation cp --abi cp311)
    "$PY" -m pip download -q "${pipargs[@]}" -d "$WHEELS" "${REQUIREMENTS[@]}"
    rm -rf "$SITE"
    "$PY" -m pip install -q "${pipargs[@]}" --no-index --find-links "$WHEELS" \
        --target "$SITE" "${REQUIREMENTS[@]}"
    touch "$SITE/.stamp-$stamp"
fi

# --- 4. edgerec's own wheel (pure python, rebuilt from the working tree every run) ----
log "building edgerec's wheel"
wheel=$("$ROOT/device_tests/build-wheel.sh" "$CACHE/dist" "$PY" 2>/dev/null)
rm -rf "$EDGEREC_SITE"
"$PY" -m pip install -q --no-deps --no-compile --target "$EDGEREC_SITE" "$wheel"

# --- 5. fake /proc/cpuinfo matching the emulated core -----------------------------------
# cortex-a72 = Raspberry Pi 4, cortex-a76 = Raspberry Pi 5 (dot-product + fp16 kernels).
case $QEMU_CPU in
    cortex-a72) part=0xd08 variant=0x0 revision=3 features="fp asimd evtstrm crc32 cpuid" ;;
    cortex-a76) part=0xd0b variant=0x4 revision=1
        features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    *) echo "QEMU_CPU must be cortex-a72 or cortex-a76 (got $QEMU_CPU)" >&2; exit 2 ;;
esac
CPUINFO=$CACHE/cpuinfo-$QEMU_CPU
: >"$CPUINFO"
for cpu in 0 1 2 3; do
    printf '%s\n' "processor	: $cpu" "BogoMIPS	: 108.00" "Features	: $features" \
        "CPU implementer	: 0x41" "CPU architecture: 8" "CPU variant	: $variant" \
        "CPU part	: $part" "CPU revision	: $revision" "" >>"$CPUINFO"
done

log "versions: $(qemu-aarch64-static --version | head -1); $(
    env -u PYTHONPATH qemu-aarch64-static -cpu "$QEMU_CPU" -L "$ARMROOT" "$ARMPY" -c \
    'import platform; print(platform.machine(), platform.python_version())')"
if ((SETUP_ONLY)); then
    log "setup done: $CACHE ($(du -sh "$CACHE" | cut -f1))"
    exit 0
fi

# --- 6. the device_tests suite, on aarch64 ----------------------------------------------
[[ -f $BUNDLE/manifest.json ]] || {
    echo "no bundle at $BUNDLE: run 'make device-bundle' or pass a bundle path" >&2; exit 2; }
BUNDLE=$(cd "$BUNDLE" && pwd)
REPORT=$CACHE/device-report-$QEMU_CPU.json
rm -f "$REPORT"
log "running device_tests under qemu-aarch64-static -cpu $QEMU_CPU (bundle $BUNDLE)"
# -P: do not put the working directory on sys.path, so `edgerec` comes from the
# installed wheel and not from the source folder of the same name.
pytest_cmd=(qemu-aarch64-static -cpu "$QEMU_CPU" -L "$ARMROOT" "$ARMPY" -P -m pytest
            -c device_tests/pytest.ini device_tests --bundle "$BUNDLE"
            --profile qemu-aarch64 --strict-install --latency-runs "$LATENCY_RUNS"
            --report "$REPORT" "${EXTRA[@]}")
rc=0
"${SUDO[@]}" env PYTHONPATH="$EDGEREC_SITE:$SITE" PYTHONNOUSERSITE=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONHASHSEED=0 \
    unshare -m sh -c 'mount --bind "$0" /proc/cpuinfo && exec "$@"' "$CPUINFO" \
    "${pytest_cmd[@]}" || rc=$?

# --- 7. parity summary (host python reads the JSON report) ------------------------------
if [[ -f $REPORT ]]; then
    "$PY" "$ROOT/device_tests/summarize.py" --parity-only "$REPORT"
fi
log "finished in ${SECONDS}s, pytest exit code $rc, report $REPORT"
exit "$rc"
