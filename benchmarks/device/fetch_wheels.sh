#!/usr/bin/env bash
# Download the pure-Python packages the engine needs beyond what the lent GPU machine's
# image holds (it has torch, numpy, scipy, tifffile, safetensors, psutil, matplotlib, pytest,
# scikit-image, but no pydantic and no IPython, which taufactor imports). The machine cannot
# reach a registry, so they travel as wheels in .whl/ (git-ignored), named in the run's carry.
# Usage, in the repository root: bash benchmarks/device/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$tag")
done
# One version of each (pinned to what the project is tested with); --no-deps, so every
# dependency that the image lacks is named here.
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    taufactor==1.2.1 ipython==9.18.1 ipython-pygments-lexers traitlets==5.16.1 \
    jedi==0.20.1 parso==0.8.7 matplotlib-inline==0.2.2 pexpect==4.9.0 ptyprocess==0.7.0 \
    prompt_toolkit==3.0.53 wcwidth==0.9.4 stack-data==0.6.3 asttokens==3.0.2 \
    executing==2.3.0 pure_eval==0.2.4 decorator typing-extensions==4.16.0
du -sh .whl
