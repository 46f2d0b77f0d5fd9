"""`nnUNetv2_flare_ext_trainer_path`: the folder to put into nnU-Net's `nnUNet_extTrainer`.

    export nnUNet_extTrainer=$(nnUNetv2_flare_ext_trainer_path)

nnUNetv2_train imports the modules of that folder as top-level modules; the folder's module only re-exports this
package's trainers, so the classes live (and pickle) under `nnunetv2_flare.training`.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence


def ext_trainer_path() -> str:
    import nnunetv2_flare.ext_trainers as ext_trainers
    return os.path.abspath(ext_trainers.__path__[0])


def ensure_ext_trainer_env(environ: "os._Environ[str] | dict[str, str] | None" = None) -> str:
    """Put this package's trainer folder first in `nnUNet_extTrainer` (keeping any other folders there) and return
    the new value. Every command of this package that needs the trainers calls it; with `environ` given (e.g. a
    copy for a subprocess) that mapping is changed instead of `os.environ`."""
    env = os.environ if environ is None else environ
    path = ext_trainer_path()
    others = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep)
              if p.strip() and os.path.abspath(p) != path]
    env["nnUNet_extTrainer"] = os.pathsep.join([path, *others])
    return env["nnUNet_extTrainer"]


def main(argv: Sequence[str] | None = None) -> int:
    from nnunetv2_flare.cli_errors import FlareArgumentParser, run_command

    parser = FlareArgumentParser(
        prog="nnUNetv2_flare_ext_trainer_path",
        description="Print the folder to put into nnU-Net's nnUNet_extTrainer, so that nnUNetv2_train finds this "
                    "package's trainers: export nnUNet_extTrainer=$(nnUNetv2_flare_ext_trainer_path)")
    parser.parse_args(argv)  # -h prints the help instead of the path; anything else is a one-line error
    return run_command(parser.prog, lambda: print(ext_trainer_path()))


if __name__ == "__main__":
    sys.exit(main())
