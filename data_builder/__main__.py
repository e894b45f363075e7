import sys

from data_builder.cli import main

sys.exit(main())
