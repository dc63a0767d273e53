"""The batch retrainer: archive -> point-in-time training set -> scikit-learn fit -> a gated challenger."""
