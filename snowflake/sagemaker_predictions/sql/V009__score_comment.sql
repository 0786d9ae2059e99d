-- What SCORE is, where analysts look (DESCRIBE TABLE, Snowsight): the model's booster
-- score through the calibration fitted on its validation split (inference.calibration),
-- so a probability, not a rank. Applied again whenever this text changes (setting a
-- comment is idempotent).
ALTER TABLE {{table}} ALTER COLUMN SCORE COMMENT
    'Calibrated probability (0 to 1) that the customer churns within {{label_window_days}} days after AS_OF_DATE, from the model in MODEL_PACKAGE_ARN (Platt scaling fitted on its validation split; its evaluation report shows the reliability before and after).';
