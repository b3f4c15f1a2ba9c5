import sys

from kronecker_zoo.cli import main

sys.exit(main())
