"""Column-wise encoders for gradient boosting's native handling of missing values and categories.

Each maps one input column to one output column, which permutation importance relies on to
shuffle features in place of raw columns (see ``importance``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import OrdinalEncoder


def _as_float(X: Any) -> np.ndarray:
    if isinstance(X, pd.DataFrame):
        try:
            return np.array(X.to_numpy(dtype=float, na_value=np.nan))
        except (TypeError, ValueError):
            return np.array(X.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, na_value=np.nan))
    return np.array(X, dtype=float)


class _Numbers(TransformerMixin, BaseEstimator):
    """Numbers as a float matrix, missing (NaN, None, pd.NA) as NaN, which gradient boosting splits
    on natively. A column with no value at all in training becomes 0 (it carries nothing, and
    sklearn's binning cannot take an all-missing feature)."""

    def fit(self, X: Any, y: Any = None) -> _Numbers:
        Z = _as_float(X)
        self.empty_ = np.isnan(Z).all(0) if len(Z) else np.ones(Z.shape[1], dtype=bool)
        self.n_features_in_ = Z.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object) if isinstance(X, pd.DataFrame) else None
        return self

    def transform(self, X: Any) -> np.ndarray:
        Z = _as_float(X)
        Z[:, self.empty_] = 0.0
        return Z

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        if input_features is None:
            input_features = self.feature_names_in_ if self.feature_names_in_ is not None else \
                [f"x{i}" for i in range(self.n_features_in_)]
        return np.asarray(input_features, dtype=object)


class _Codes(TransformerMixin, BaseEstimator):
    """Categories as codes for native categorical splits, missing and unseen as NaN. A column of
    more than 255 levels keeps its 254 most frequent and pools the rest (the splitter's limit);
    the pooling is only switched on when some column needs it, as finding rare levels is slow."""

    def fit(self, X: Any, y: Any = None) -> _Codes:
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        wide = bool(len(frame.columns)) and int(frame.nunique().max()) > 255
        self.encoder_ = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan,
                                       max_categories=255 if wide else None).fit(X)
        self.n_features_in_ = self.encoder_.n_features_in_
        return self

    def transform(self, X: Any) -> np.ndarray:
        return self.encoder_.transform(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return self.encoder_.get_feature_names_out(input_features)
