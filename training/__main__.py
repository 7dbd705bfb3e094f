"""`torchrun --nproc_per_node=N -m training pretrain|finetune|evaluate|predict|probe ...`"""

import sys

from training.cli import main

sys.exit(main())
