# Save or restore the compiled CUDA extensions (gsplat, fused SSIM) so a fresh GPU machine
# skips the ~90 s of JIT builds. Source from the repo root after scripts/gpu_env.sh:
#   GPU_CACHE_MODE=save OUTDIR=$OUT . scripts/gpu_cache.sh     # tar + split into <=15 MB parts
#   . scripts/gpu_cache.sh                                      # restore from .gpu/ext_cache/
_exts="$HOME/.cache/torch_extensions $HOME/.cache/segsplat"
if [ "${GPU_CACHE_MODE:-restore}" = save ]; then
  tar -C / -czf /tmp/ext_cache.tgz $(for d in $_exts; do [ -d "$d" ] && echo "${d#/}"; done)
  split -b 15M -d /tmp/ext_cache.tgz "${OUTDIR:-.}/ext_cache.part"
  ls -la "${OUTDIR:-.}"/ext_cache.part*
elif ls .gpu/ext_cache/ext_cache.part* >/dev/null 2>&1; then
  cat .gpu/ext_cache/ext_cache.part* | tar -C / -xzf -
  # The built objects keep their archived times (touching them would invalidate ninja's
  # dependency log and rebuild everything); the freshly installed gsplat sources are
  # back-dated instead, so that ninja sees the objects as newer.
  [ -d /tmp/site/gsplat ] && find /tmp/site/gsplat -type f -exec touch -d 2001-01-01 {} +
  echo "restored CUDA extension cache"
fi
