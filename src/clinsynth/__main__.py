"""``python -m clinsynth …`` (and ``torchrun … -m clinsynth fit …``): the command line."""
from clinsynth.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
