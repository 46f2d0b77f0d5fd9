"""Many cases through one predictor: the plan and its checks, the loop, request records, the report, safety."""
