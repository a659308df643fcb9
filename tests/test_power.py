"""Power samplers: parsers on real output formats, and the sampler commands run for real on sysfs trees."""

import subprocess
from pathlib import Path

import pytest

from remote.power import make_sampler
from remote.power.ina3221 import Ina3221Sampler
from remote.power.monitor import power_record
from remote.power.rapl import RaplSampler
from remote.power.tegrastats import TegrastatsSampler
from remote.power.vcgencmd import VcgencmdSampler
from tests.helpers import ina3221_tree

FIXTURES = Path(__file__).parent / "fixtures" / "power"


def run_for(command: str, seconds: float = 0.6) -> str:
    """Run a sampler's shell loop for a moment, as it runs on a board, and return what it printed."""
    result = subprocess.run(["timeout", str(seconds), "bash", "-c", command], capture_output=True, text=True)
    return result.stdout


def test_tegrastats_jetpack6_and_jetpack4():
    assert TegrastatsSampler().watts((FIXTURES / "tegrastats_jp6_orin_nano.txt").read_text()) == [4.981, 7.219]
    assert TegrastatsSampler(rail="VDD_CPU_GPU_CV").watts((FIXTURES / "tegrastats_jp6_orin_nano.txt").read_text())[1] == 2.283
    assert TegrastatsSampler().watts((FIXTURES / "tegrastats_jp4_nano.txt").read_text()) == [1.407]  # POM_5V_IN


def test_vcgencmd_sums_current_times_voltage():
    text = (FIXTURES / "vcgencmd_pmic_read_adc_pi5.txt").read_text()
    lines = text.splitlines()
    amps = {line.split()[0][:-2]: float(line.split("=")[1][:-1]) for line in lines if "current(" in line}
    volts = {line.split()[0][:-2]: float(line.split("=")[1][:-1]) for line in lines if "volt(" in line}
    expected = sum(a * volts[rail] for rail, a in amps.items())
    assert VcgencmdSampler().watts(text + "--\n") == [pytest.approx(expected)]
    assert 1.0 < expected < 3.0  # an idle Pi 5 draws a couple of watts on these rails


def test_ina3221_command_on_a_sysfs_tree(tmp_path):
    sampler = Ina3221Sampler(root_glob=ina3221_tree(tmp_path))
    readings = sampler.watts(run_for(sampler.command(0.1)))
    assert readings and all(w == pytest.approx(6.0) for w in readings)  # 5.000 V x 1.200 A
    both = Ina3221Sampler(rails=["VDD_CPU_GPU_CV", "VDD_SOC"], root_glob=sampler.root_glob)
    assert both.watts(run_for(both.command(0.1)))[0] == pytest.approx(2.75)


def test_rapl_command_and_counter_wrap(tmp_path):
    (tmp_path / "energy_uj").write_text("1000\n")
    (tmp_path / "max_energy_range_uj").write_text("262143328850\n")
    sampler = RaplSampler(domain=str(tmp_path))
    assert all(w == 0.0 for w in sampler.watts(run_for(sampler.command(0.1))))  # counter did not move
    lines = "1000000000 262143000000 262143328850\n2000000000 1671150 262143328850\n"
    assert sampler.watts(lines) == [pytest.approx(2.0)]  # wrapped: 328850 + 1671150 uJ in 1 s


def test_external_meter_and_registry():
    sampler = make_sampler({"sampler": "external", "command": "echo 3.5"})
    assert sampler.watts(run_for(sampler.command(0.1)))[:2] == [3.5, 3.5]
    assert make_sampler({"sampler": "none"}) is None


def test_power_record_units():
    record = power_record(make_sampler({"sampler": "external", "command": "true"}), [2.0, 2.0], [5.0, 7.0], 20.0)
    assert record["power_mean_w"] == 6.0 and record["energy_per_inference_mj"] == 120.0
    assert record["energy_above_idle_per_inference_mj"] == 80.0 and record["idle_power_w"] == 2.0
