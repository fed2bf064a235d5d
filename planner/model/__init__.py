"""The VLA model: tiny ViT + reasoning LM + flow-matching action expert (docs in each module).

- config.py: ModelConfig dataclasses (configs/model/tiny.yaml)
- vision.py, lm.py, action_expert.py: the networks; flow.py: stateless flow matching
- tokenizer.py: byte-level BPE with the special and trajectory-bin tokens
- batch.py: pre/post-processing and batch keys; vla.py: VLAModel (graphs + training loss)
- checkpoint.py: save/load with checks; hf_backbone.py: optional Hugging Face backbone
- bench.py: `cocdrive bench model`
The inference host loop is planner/runner.py; the Planner is planner/planners/vla.py.
"""
