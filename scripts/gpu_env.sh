# Source this on the offline GPU machine (repo root): installs the carried wheels in .whl/
# (see ../shared/gpu/wheels.sh) into /tmp/site once and puts them on PYTHONPATH.
export PYTHONUNBUFFERED=1 SAM2_BUILD_CUDA=0
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ ! -f /tmp/site/.installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --target /tmp/site .whl/* && touch /tmp/site/.installed
fi
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
