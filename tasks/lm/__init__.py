"""Language modeling: text chopped into token nodes, a GPT-style causal decoder, sampling.

tokenizer.py (char / byte-level BPE), data.py (corpora -> random token windows), model.py (GPT and
its sampler), module.py (the LightningModule), task.py (the registry entry).
"""
