"""Does a feature help a recommender? Small standard consumers trained on CPU.

``data``: interactions and the lake's item features (a release or explicit table versions);
``split``: leave-last-out by time, cold-start and long-tail slices; ``models``: SASRec and a
two-tower model over one item representation; ``generative``: TIGER-style generative
retrieval, decoding the next item's Semantic ID with beam search constrained to existing SIDs;
``train``: training and ranking metrics; ``harness``: every (model, representation) over seeds,
mean ± std; ``encoder_tuning``: aligning the sentence encoder on user behaviour.
"""
