"""What a converter writes into a served model's config.pbtxt `parameters` and the runtime reads back.

Torch-free (numpy and protobuf only), so converters, the runtime inside Triton, the planner and deploy
share it. Each family has one module (`encoders`, `generation`, `speech`, `chat`) of frozen dataclasses:
one writer (`to_params`), one reader (`from_params`) and one default per field, checked on
construction with errors that name the field and the limit. `files` names what lies beside a config.
"""
