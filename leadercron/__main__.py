import sys

from leadercron.cli import main

sys.exit(main())
