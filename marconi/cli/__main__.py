import sys

from marconi.cli import main

sys.exit(main())
