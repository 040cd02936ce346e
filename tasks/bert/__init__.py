"""Encoder-only text: text chopped into token nodes, a bidirectional encoder, masked-LM pretraining
and sequence classification (BERT).

corpus.py (Shakespeare passages by genre, split by play; labelled CSV / TSV / JSONL files),
data.py (special tokens, masking, the pretraining and classification data modules), model.py
(BertConfig, Bert and its heads), module.py (the LightningModule), figures.py (confusion matrix and
[CLS] attention pictures), task.py (the registry entry).
"""
