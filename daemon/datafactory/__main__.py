import sys

from datafactory.cli import main

sys.exit(main())
