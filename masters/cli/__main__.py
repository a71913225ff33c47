import sys

from masters.cli import main

sys.exit(main())
