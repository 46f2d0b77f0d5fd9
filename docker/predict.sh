#!/bin/sh
# The entry script of FLARE's laptop evaluation. The organisers run the image one case at a time as
#   docker container run --name TEAM --rm -v $PWD/inputs/:/workspace/inputs/ \
#       -v $PWD/TEAM_outputs/:/workspace/outputs/ TEAM:latest /bin/bash -c "sh predict.sh"
# and score every <case>.nii.gz in outputs against the reference of <case>_0000.nii.gz in inputs
# (docs/container.md says where these conventions come from).
# In: CTs <case>_0000.nii.gz in /workspace/inputs. Out: uint8 label maps <case>.nii.gz, the 13 FLARE organs, on each
# CT's grid, in /workspace/outputs; nothing else is written there. The models are the two nnU-Net model folders in
# /workspace/models under their own names (<Trainer>__<Plans>__<configuration>: the names say which configuration
# each is); both networks run on OpenVINO from their cached conversions: no PyTorch, no downloads.
# The FLARE_* variables move the folders (tests, runs outside Docker).
set -eu
INPUTS="${FLARE_INPUTS:-/workspace/inputs}"
OUTPUTS="${FLARE_OUTPUTS:-/workspace/outputs}"
MODELS="${FLARE_MODELS:-/workspace/models}"

model_folder() {  # the one folder of $MODELS whose configuration name contains $1
    set -- "$1" "$MODELS"/*__*__*"$1"*
    if [ $# -ne 2 ] || [ ! -d "$2" ]; then
        echo "predict.sh: expected one model folder <Trainer>__<Plans>__<configuration with '$1'> in $MODELS" >&2
        exit 2
    fi
    echo "$2"
}
LOCATOR=$(model_folder locator)
ORGANS=$(model_folder organs)
# extra nnUNetv2_flare_predict options, e.g. FLARE_PREDICT_OPTIONS="--threads 4"
# shellcheck disable=SC2086
exec nnUNetv2_flare_predict -i "$INPUTS" -o "$OUTPUTS" -m1 "$LOCATOR" -m2 "$ORGANS" \
    --backend openvino --disable_progress_bar ${FLARE_PREDICT_OPTIONS:-}
