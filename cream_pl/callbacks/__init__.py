"""Lightning callbacks for training runs: ``EpochCheckpoints`` (a checkpoint and the val numbers after every epoch).

May import: core, data, models and metrics; never pseudo_boxes, pipelines, cli or reporting.
"""
