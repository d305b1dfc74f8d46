"""train_me.py and finetuner.py: what a run is given and records (``config``), the epoch loop
(``stage``), fine-tuning (``finetune``), and the data, labels, targets, sampling, augmentation
and losses they use."""
