"""Waveform augmentations of the speech task (tasks/speech/augment.py, rir.py): what each computes,
that their randomness is keyed by (seeds, epoch, utterance) whatever the loader's workers, that off
is the untouched data, their bad inputs, and a CLI fit with all of them on."""

import math
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch

from tzoo.tasks.cli import main
from tzoo.tasks.speech.augment import (
    Augmenter,
    Babble,
    Gain,
    Noise,
    Reverb,
    Speed,
    Telephone,
    WaveAugment,
    change_speed,
    gain,
    mix_at_snr,
    reverberate,
    telephone,
)
from tzoo.tasks.speech.data import LengthBucketSampler, SpeechDataModule, SpeechDataset, collate
from tzoo.tasks.speech.rir import schroeder_rt60, simulate_rir

RATE = 16000


def _sine(freq, seconds=1.0, rate=RATE, amplitude=0.5):
    t = torch.arange(int(seconds * rate)) / rate
    return amplitude * torch.sin(2 * math.pi * freq * t)


def _power(x):
    return float(x.double().square().mean())


def _band_energy(x, low, high, rate=RATE):
    spectrum = torch.fft.rfft(x.double()).abs().square()
    freqs = torch.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def _peak_hz(x, rate=RATE):
    spectrum = torch.fft.rfft(x.double() * torch.hann_window(len(x), dtype=torch.float64)).abs()
    return float(torch.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


# --- what each augmentation computes -----------------------------------------------------------


def test_reverb_with_a_delta_impulse_response_is_the_identity():
    wave = torch.randn(RATE)
    assert torch.allclose(reverberate(wave, torch.tensor([1.0])), wave, atol=1e-5)
    delayed = reverberate(wave, torch.tensor([0.0, 0.0, 0.5]))  # a delay of 2 samples at half the level
    assert delayed.shape == wave.shape and torch.allclose(delayed[2:], 0.5 * wave[:-2], atol=1e-5)


@pytest.mark.parametrize("rt60", [0.3, 0.6, 1.0])
def test_simulated_rooms_decay_60_db_in_the_asked_rt60(rt60):
    measured = [schroeder_rt60(simulate_rir(np.random.default_rng(seed), RATE, rt60=rt60), RATE) for seed in range(8)]
    rir = simulate_rir(np.random.default_rng(0), RATE, rt60=rt60)
    assert rir.shape == (int(rt60 * RATE),) and rir.dtype == np.float32
    assert rir[0] == 1.0 and np.abs(rir[1:]).max() < 1.0  # the direct sound first, the loudest
    assert abs(np.median(measured) / rt60 - 1) < 0.15, measured
    assert np.array_equal(rir, simulate_rir(np.random.default_rng(0), RATE, rt60=rt60))  # keyed by the generator


def test_a_small_dead_room_reverberates_less_than_a_large_live_one():
    def reverberant_share(rt60, room):
        rir = simulate_rir(np.random.default_rng(3), RATE, rt60=rt60, room=room)
        return float((rir[1:].astype(np.float64) ** 2).sum() / (rir.astype(np.float64) ** 2).sum())

    assert reverberant_share(0.2, (3.0, 3.5)) < reverberant_share(1.0, (10.0, 12.0))


def test_the_telephone_path_removes_what_lies_above_4_khz_and_keeps_the_voice_band():
    wave = 0.1 * torch.randn(2 * RATE, generator=torch.Generator().manual_seed(0))
    out = telephone(wave, RATE, low_hz=300, high_hz=3400)
    assert out.shape == wave.shape
    assert _band_energy(out, 4100, 8000) < 1e-3 * _band_energy(wave, 4100, 8000)
    assert _band_energy(out, 0, 100) < 0.02 * _band_energy(wave, 0, 100)
    assert 0.5 < _band_energy(out, 600, 3000) / _band_energy(wave, 600, 3000) < 1.5


@pytest.mark.parametrize("db", [-12.0, -3.0, 6.0])
def test_gain_scales_the_rms_by_the_decibels_asked(db):
    wave = torch.randn(RATE)
    ratio_db = 10 * math.log10(_power(gain(wave, db)) / _power(wave))
    assert ratio_db == pytest.approx(db, abs=1e-4)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_duration_by_one_over_the_factor_and_pitch_by_the_factor(factor):
    wave = _sine(440.0, seconds=2.0)
    out = change_speed(wave, RATE, factor)
    assert abs(len(out) - len(wave) / factor) <= 1
    assert _peak_hz(out) == pytest.approx(440.0 * factor, abs=1.0)
    assert change_speed(wave, RATE, 1.0) is wave


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_is_mixed_at_the_asked_snr(snr):
    wave, noise = _sine(300.0), torch.randn(RATE)
    added = mix_at_snr(wave, noise, snr) - wave
    assert 10 * math.log10(_power(wave) / _power(added)) == pytest.approx(snr, abs=0.01)
    assert mix_at_snr(wave, torch.zeros(RATE), snr) is wave  # silence to add: nothing added


def _talkers(count=8, seconds=0.5):
    """Training 'utterances' that are sines at 200, 400, ... Hz: which talkers babble picked shows in a spectrum."""
    return [(_sine(200.0 * (j + 1), seconds, amplitude=0.1 * (j + 1)), torch.tensor([j])) for j in range(count)]


def test_babble_mixes_three_to_six_other_utterances_at_the_asked_snr():
    talkers = _talkers()
    config = WaveAugment(babble=Babble(p=1.0, talkers=(3, 6), snr_db=(12.0, 12.0)))
    augmenter = Augmenter(config, RATE, key=(0, 0), talkers=talkers)
    counts = set()
    for index in range(len(talkers)):
        wave = talkers[index][0]
        added = augmenter(wave, epoch=0, index=index) - wave
        assert 10 * math.log10(_power(wave) / _power(added)) == pytest.approx(12.0, abs=0.01)
        spectrum = torch.fft.rfft(added.double()).abs()
        heard = {j for j in range(len(talkers)) if spectrum[int(200 * (j + 1) * 0.5)] > 0.05 * spectrum.max()}
        assert index not in heard and 3 <= len(heard) <= 6, (index, heard)
        counts.add(len(heard))
    assert len(counts) > 1  # the number of talkers varies


def test_each_augmentation_draws_its_own_numbers_so_switching_one_on_leaves_the_others_alone():
    wave = torch.randn(RATE, generator=torch.Generator().manual_seed(1))
    reverb = Augmenter(WaveAugment(reverb=Reverb(p=1.0)), RATE, key=(5, 7))
    both = Augmenter(WaveAugment(reverb=Reverb(p=1.0), gain=Gain(p=1.0, db=(6.0, 6.0))), RATE, key=(5, 7))
    alone = reverb(wave, epoch=2, index=9)
    assert torch.allclose(both(wave, epoch=2, index=9), alone * 10 ** (6 / 20), atol=1e-6)
    assert torch.equal(alone, reverb(wave, epoch=2, index=9))  # keyed, not stateful
    assert not torch.allclose(alone, reverb(wave, epoch=3, index=9))  # another epoch, another room
    assert not torch.allclose(alone, Augmenter(WaveAugment(reverb=Reverb(p=1.0)), RATE, key=(5, 8))(wave, epoch=2, index=9))


def test_a_probability_of_one_half_fires_about_half_the_time():
    augmenter = Augmenter(WaveAugment(gain=Gain(p=0.5, db=(6.0, 6.0))), RATE, key=(0, 0))
    wave = torch.ones(100)
    fired = sum(not torch.equal(augmenter(wave, epoch=0, index=i), wave) for i in range(400))
    assert 160 < fired < 240


# --- in the data module: off, workers, epochs, batches ---------------------------------------------

EVERYTHING = {
    "speed": {"p": 0.5}, "reverb": {"p": 0.5}, "noise": {"p": 0.5}, "babble": {"p": 0.5, "talkers": [2, 3]},
    "telephone": {"p": 0.5}, "gain": {"p": 0.5},
}  # fmt: skip


def _batches(data, passes=1):
    loader = data.train_dataloader()
    return [[t.clone() for t in batch] for _ in range(passes) for batch in loader]


def _module(tiny_corpus, **kwargs):
    data = SpeechDataModule("manifest", data_dir=str(tiny_corpus), batch_size=2, **kwargs)
    data.setup("fit")
    return data


def _same(a, b):
    return len(a) == len(b) and all(all(torch.equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b))


def test_off_by_default_and_all_off_give_the_untouched_training_batches(tiny_corpus):
    default = _module(tiny_corpus)
    assert not default.augment.enabled and default.augment == WaveAugment()
    zero = _module(tiny_corpus, augment={name: {"p": 0.0} for name in EVERYTHING})
    plain = SpeechDataset(default.split_entries("train"), default.alphabet, default.sample_rate)
    sampler = LengthBucketSampler([e["duration"] for e in plain.entries], 2, seed=0)
    reference = [[t.clone() for t in collate([plain[i] for i in batch])] for _ in range(2) for batch in sampler]
    assert _same(_batches(default, 2), reference) and _same(_batches(zero, 2), reference)


def test_augmented_batches_are_the_same_with_any_number_of_workers_and_differ_by_epoch(tiny_corpus):
    serial = _batches(_module(tiny_corpus, augment=EVERYTHING), passes=2)
    parallel = _batches(_module(tiny_corpus, augment=EVERYTHING, num_workers=2), passes=2)
    assert _same(serial, parallel)
    plain = _batches(_module(tiny_corpus), passes=1)
    assert not _same(serial[: len(plain)], plain)  # something was augmented
    first, second = serial[: len(plain)], serial[len(plain) :]
    # the same pairs of utterances in both epochs (6 utterances sorted by length, in twos), augmented otherwise
    def by_text(batches):
        return sorted(batches, key=lambda b: b[2].flatten().tolist())

    assert [b[2].tolist() for b in by_text(first)] == [b[2].tolist() for b in by_text(second)]
    assert not _same(by_text(first), by_text(second))


@pytest.mark.parametrize("augment", [EVERYTHING, {}], ids=["augmented", "plain"])
def test_a_resumed_fit_goes_on_with_its_epochs_order_and_augmentations(tiny_corpus, augment):
    uninterrupted = _batches(_module(tiny_corpus, augment=augment, seed=3), passes=2)
    half = len(uninterrupted) // 2
    assert [b[2].tolist() for b in uninterrupted[:half]] != [b[2].tolist() for b in uninterrupted[half:]]  # epochs differ in order
    resumed = _module(tiny_corpus, augment=augment, seed=3)
    progress = SimpleNamespace(current=SimpleNamespace(processed=0))
    resumed.trainer = SimpleNamespace(current_epoch=0, limit_train_batches=1.0, strategy=None,
                                      fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))  # fmt: skip
    loader = resumed.train_dataloader()
    batches = iter(loader)  # Lightning makes the iterator before it restores the loop's progress
    resumed.trainer.current_epoch = 1  # the checkpoint's: read at the first batch
    assert _same([[t.clone() for t in batch] for batch in batches], uninterrupted[half:])


def test_speed_is_drawn_per_batch_so_a_bucket_keeps_similar_lengths(tiny_corpus):
    data = _module(tiny_corpus, augment={"speed": {"p": 1.0, "factors": [0.9, 1.1]}})
    plain = SpeechDataset(data.split_entries("train"), data.alphabet, data.sample_rate)
    loader = data.train_dataloader()
    factors = set()
    for tags in loader.batch_sampler:
        ratios = [len(plain[index][0]) / len(loader.dataset[(epoch, index, first)][0]) for epoch, index, first in tags]
        assert max(ratios) - min(ratios) < 1e-3, ratios  # one factor for the whole batch
        factors.add(round(ratios[0], 2))
    assert factors <= {0.9, 1.1}


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Reverb(p=1.5), r"augment\.reverb\.p must be a probability in \[0, 1\], got 1\.5"),
        (lambda: Noise(p=-0.1), r"augment\.noise\.p must be a probability in \[0, 1\], got -0\.1"),
        (lambda: Gain(p=True), r"augment\.gain\.p must be a probability in \[0, 1\], got True"),
        (lambda: Reverb(rt60=(0.8, 0.2)), r"augment\.reverb\.rt60=\[0\.8, 0\.2\] must be a range \(low <= high\) within \[0\.05, 3\.0\]"),
        (lambda: Noise(snr_db=(20, 5)), r"augment\.noise\.snr_db=\[20, 5\] must be a range \(low <= high\)"),
        (lambda: Babble(talkers=(6, 3)), r"augment\.babble\.talkers=\[6, 3\] must be a range \(low <= high\)"),
        (lambda: Babble(talkers=(2.5, 4)), r"augment\.babble\.talkers must be whole numbers, got \[2\.5, 4\]"),
        (lambda: Telephone(high_hz=(3000, 5000)), r"augment\.telephone\.high_hz=\[3000, 5000\] must be a range .* within \[1000\.0, 3900\.0\]"),
        (lambda: Gain(db=(6,)), r"augment\.gain\.db must be two numbers \[low, high\] within \[-60\.0, 40\.0\], got \[6\]"),
        (lambda: Speed(factors=[0.9, 3.0]), r"augment\.speed\.factors must be one or more numbers in \[0\.5, 2\.0\], got \[0\.9, 3\.0\]"),
    ],
)
def test_bad_settings_are_refused_naming_the_value_and_what_is_valid(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_settings_from_a_dict_reach_the_data_module_and_unknown_fields_are_named(tiny_corpus):
    with pytest.raises(ValueError, match=r"augment\.reverb\.p must be a probability in \[0, 1\], got 2"):
        SpeechDataModule("manifest", data_dir=str(tiny_corpus), augment={"reverb": {"p": 2}})
    with pytest.raises(ValueError, match=r"augment has no field 'echo' \(valid fields: speed, reverb, noise, babble, telephone, gain\)"):
        SpeechDataModule("manifest", data_dir=str(tiny_corpus), augment={"echo": {"p": 1}})


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"augment\.reverb\.ir_files: file\(s\) \['.*room\.wav'\] do not exist"):
        Reverb(p=1.0, ir_files=[str(tmp_path / "room.wav")])


def test_an_unreadable_file_is_named_when_the_loader_is_built(tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"not a wave file at all")
    config = WaveAugment(noise=Noise(p=1.0, files=[str(bad)]))  # it exists: accepted in the config
    with pytest.raises(ValueError, match=r"augment\.noise\.files: cannot read audio file '.*noise\.wav'"):
        Augmenter(config, RATE)


def test_a_silent_file_is_refused(tmp_path):
    silent = tmp_path / "silence.wav"
    soundfile.write(silent, np.zeros(800, dtype=np.float32), RATE)
    with pytest.raises(ValueError, match=r"augment\.reverb\.ir_files: impulse-response file '.*silence\.wav' is silent"):
        Augmenter(WaveAugment(reverb=Reverb(p=1.0, ir_files=[str(silent)])), RATE)


def test_files_of_another_sample_rate_are_resampled_with_a_warning(tmp_path):
    ir = np.zeros(4000, dtype=np.float32)  # 0.5 s at 8 kHz: 10 ms of silence, then an echo train
    ir[80], ir[400], ir[1200] = 0.8, 0.4, -0.2
    path = tmp_path / "hall_8k.wav"
    soundfile.write(path, ir, 8000)
    with pytest.warns(UserWarning, match=r"hall_8k\.wav: sample rate 8000 Hz resampled to the model's 16000 Hz"):
        augmenter = Augmenter(WaveAugment(reverb=Reverb(p=1.0, ir_files=[str(path)])), RATE)
    (response,) = augmenter.impulse_responses
    assert len(response) == 8000 - 160  # 16 kHz, from the peak (the direct sound) on
    assert response[0] == 1.0  # the echoes 30 and 70 ms later, at their level relative to the peak
    assert float(response[640]) == pytest.approx(0.5, abs=0.03) and float(response[2240]) == pytest.approx(-0.25, abs=0.03)
    wave = _sine(500.0)
    assert torch.allclose(augmenter(wave, epoch=0, index=0), reverberate(wave, response), atol=1e-5)


def test_noise_files_are_mixed_at_the_asked_snr(tmp_path):
    path = tmp_path / "hum.wav"
    soundfile.write(path, _sine(50.0, seconds=0.3).numpy(), RATE)
    augmenter = Augmenter(WaveAugment(noise=Noise(p=1.0, snr_db=(3.0, 3.0), files=[str(path)])), RATE)
    wave = _sine(1000.0)
    added = augmenter(wave, epoch=0, index=0) - wave
    assert 10 * math.log10(_power(wave) / _power(added)) == pytest.approx(3.0, abs=0.01)
    assert _peak_hz(added) == pytest.approx(50.0, abs=2.0)  # the file's hum, repeated to the utterance's length


# --- through the CLI --------------------------------------------------------------------------------


def test_a_cli_fit_with_every_augmentation_on(tiny_corpus, tmp_path):
    config = tmp_path / "speech.yaml"
    config.write_text(textwrap.dedent(f"""\
        seed_everything: 0
        trainer:
          max_steps: 2
          limit_val_batches: 1
          default_root_dir: {tmp_path / "runs"}
          enable_progress_bar: false
          enable_model_summary: false
          log_every_n_steps: 1
        model:
          class_path: tzoo.tasks.speech.module.SpeechRecognizer
          init_args:
            net:
              encoder: {{dim: 32, depth: 1, num_heads: 2}}
              decoder: {{dim: 32, depth: 1, num_heads: 2}}
            optim: {{warmup_steps: 1}}
            beam_size: 1
            examples: 0
        data:
          class_path: tzoo.tasks.speech.data.SpeechDataModule
          init_args:
            source: manifest
            data_dir: {tiny_corpus}
            batch_size: 3
            augment:
              speed: {{p: 1.0}}
              reverb: {{p: 1.0, rt60: [0.3, 0.5]}}
              noise: {{p: 1.0}}
              babble: {{p: 1.0, talkers: [2, 3]}}
              telephone: {{p: 1.0}}
              gain: {{p: 1.0}}
        """))
    main(["fit", "--config", str(config), "--data.init_args.augment.gain.db=[-3, 3]"])
    (run,) = [p.parent for p in (tmp_path / "runs").rglob("metrics.csv")]
    saved = (run / "config.yaml").read_text()
    assert "telephone:" in saved and "- -3" in saved  # the command line's override reached the data module
    rows = (run / "metrics.csv").read_text().splitlines()
    losses = [r for r in rows[1:] if r.split(",")[rows[0].split(",").index("train/loss")]]
    assert len(losses) == 2 and all(math.isfinite(float(r.split(",")[rows[0].split(",").index("train/loss")])) for r in losses)
