# Shared by scripts/gpu-bench.sh and scripts/gpu-profile.sh (sourced, from the repository root):
# the output folders, the device clock, a log, packing results for the device tool (it brings
# back at most 8 files, and what a killed run wrote still comes back), the CUDA libraries and the
# carried binary. The caller sets RES's default and PACK (the archive's name) first.
# DEVICE=cpu BIN=target/release/vqrae PY=/root/.venvs/ref/bin/python: a dry run on the CPU.
START=$(date +%s)
OUT=${OUT:-out}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT" "$RES"
pack() { tar czf "$OUT/$PACK.tmp" -C "$RES" . && mv "$OUT/$PACK.tmp" "$OUT/$PACK.tgz"; }
elapsed() { echo $(($(date +%s) - START)); }
log() { echo "[$(elapsed) s] $*" | tee -a "$RES/progress.log"; }
SP=$($PY -c 'import site; print(site.getsitepackages()[0])')
export LD_LIBRARY_PATH=$SP/nvidia/cu13/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
if [ -z "${BIN:-}" ]; then
    BIN=/tmp/vqrae-cuda
    # always unpacked: a machine still warm from an earlier call may hold an older binary
    xz -dc .gpu/vqrae.xz > "$BIN" && chmod +x "$BIN"
fi
