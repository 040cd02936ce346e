"""Decision transformer: offline RL as sequence modeling over (return-to-go, state, action) nodes.

collect.py (scripted behaviour policies -> a local Minari dataset), tokenizer.py (trajectory ->
interleaved R, s, a nodes), model.py (the causal decoder and its action head), data.py (Minari
episodes -> random K-step windows), rollout.py (playing the real environment), module.py (the
LightningModule), task.py (the registry entry).
"""
