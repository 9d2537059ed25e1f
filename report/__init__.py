"""``make report`` / ``python -m report``: one self-contained HTML page for the whole chain, from what every
stage wrote (its report.json and plots) under artifacts/. Reads only; standard library only."""
