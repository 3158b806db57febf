"""`python -m keras_lcnet`: the `keras-lcnet` command line."""

import sys

from keras_lcnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
