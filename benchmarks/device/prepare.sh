#!/usr/bin/env bash
# Put into the repository what gpu_check.sh needs on the lent GPU machine, which receives only
# the checkout (not ../shared) and cannot reach a registry. Both folders are git-ignored
# (.git/info/exclude) and named in the run's carry:
# - .truth/: the real volumes the fidelity part trains on (copies from ../shared/data/volumes);
# - .whl/: the pure-Python packages the engine needs beyond what the machine's image holds
#   (it has torch, numpy, scipy, tifffile, safetensors, psutil, matplotlib, pytest,
#   scikit-image, but no pydantic and no IPython, which taufactor imports).
# Usage, in the repository root: bash benchmarks/device/prepare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .git/info
for folder in /.whl/ /.truth/; do
    grep -qx "$folder" .git/info/exclude 2>/dev/null || echo "$folder" >> .git/info/exclude
done
rm -rf .truth && mkdir .truth
cp ../shared/data/volumes/sofc_anode_3phase_62.tif ../shared/data/volumes/nmc_binary_128.tif .truth/
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
du -sh .whl .truth
