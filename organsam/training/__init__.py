"""Training: dataset readers, patient-level splits, organ-balanced slice sampling, augmentation, a
frozen-encoder feature cache, and the trainer behind ``organsam train`` (CPU, one GPU or DDP under torchrun).

Modules (import what you need; the package import itself is light):

* :mod:`~organsam.training.manifest`: ``Case``, CSV/JSON manifests, ``split_cases`` (by patient).
* :mod:`~organsam.training.datasets`: ``read_dataset(name, root)``, ``load_case``, one reader per layout.
* :mod:`~organsam.training.case_store`: loaded cases with per-slice organ areas.
* :mod:`~organsam.training.sampling`: ``OrganBalancedSampler``, ``StepBatchSampler``.
* :mod:`~organsam.training.transforms`: ``SliceTransform`` (model space + MONAI augmentation, no flips).
* :mod:`~organsam.training.slice_dataset`: ``SliceDataset``.
* :mod:`~organsam.training.sequence_sampling`, :mod:`~organsam.training.sequence_dataset`,
  :mod:`~organsam.training.sequence_loss`: memory training over short slice sequences
  (``data.sequence_length``): ``SequenceSampler``, ``SequenceDataset``, ``SequenceLoss``.
* :mod:`~organsam.training.feature_cache`: ``FeatureCache``.
* :mod:`~organsam.training.schedule`, :mod:`~organsam.training.distributed`,
  :mod:`~organsam.training.validation`, :mod:`~organsam.training.metrics_logger`.
* :mod:`~organsam.training.train_config`: ``TrainConfig``, ``load_train_config``.
* :mod:`~organsam.training.trainer`: ``Trainer`` (hooks: ``on_train_start``, ``train_step``, ``log_step``,
  ``validation_step``, ``checkpoint``, ``on_train_end``), ``train``; :mod:`~organsam.training.train_data` (the run's
  data), :mod:`~organsam.training.slice_loss` (the loss of single slices), :mod:`~organsam.training.train_state`
  (the state on disk, resume, model checkpoints).
"""
