import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The machine is shared: these tests run on one core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
