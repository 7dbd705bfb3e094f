"""`torchrun --nproc_per_node=N -m training pretrain|finetune|evaluate ...`"""

import sys

from training.cli import main

sys.exit(main())
