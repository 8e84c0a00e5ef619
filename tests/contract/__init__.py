from tritonclient.grpc import model_config_pb2 as mc

from tritonize.contract.model_config import config_parameters, read_config, render, set_parameters


def through_config(params: dict[str, str], tmp_path) -> dict[str, str]:
    """Parameters written into a config.pbtxt and read back, as Triton hands them to a model."""
    path = tmp_path / "config.pbtxt"
    path.write_text(render(set_parameters(mc.ModelConfig(name="m"), params)))
    return config_parameters(read_config(path))
