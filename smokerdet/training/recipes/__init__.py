"""The training recipes, siblings over the shared epoch loop that never import each other:
``full`` (fine-tune), ``head`` (refit the head on few photos), ``crossval`` (``--cv K``).
:func:`smokerdet.training.train.train` chooses one."""
