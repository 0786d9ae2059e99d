-- Churn features as of a date, from the CRM, POS and support tables.
-- Bound parameters: %(as_of)s (a date: features use only rows strictly before it),
-- %(label_window_days)s (the label looks only at the window starting at as_of).
-- One row per customer who signed up before as_of and had not cancelled by then.
WITH params AS (
    SELECT TO_DATE(%(as_of)s) AS as_of, %(label_window_days)s AS label_days
),
active AS (
    SELECT c.customer_id, c.signup_date, c.plan, c.region, c.age, c.monthly_fee,
           c.acquisition_channel, c.cancel_date, p.as_of, p.label_days
    FROM customers c
    CROSS JOIN params p
    WHERE c.signup_date < p.as_of
      AND (c.cancel_date IS NULL OR c.cancel_date >= p.as_of)
),
txn_recent AS (
    SELECT t.customer_id,
           COUNT_IF(t.txn_ts >= DATEADD(day, -30, p.as_of)) AS txn_count_30d,
           COUNT(*) AS txn_count_90d,
           SUM(IFF(t.txn_ts >= DATEADD(day, -30, p.as_of), t.amount, 0)) AS spend_30d,
           SUM(t.amount) AS spend_90d,
           AVG(t.amount) AS avg_basket_90d,
           AVG(IFF(t.channel = 'online', 1, 0)) AS online_share_90d
    FROM transactions t
    CROSS JOIN params p
    WHERE t.txn_ts < p.as_of
      AND t.txn_ts >= DATEADD(day, -90, p.as_of)
    GROUP BY t.customer_id
),
txn_last AS (
    SELECT t.customer_id, MAX(t.txn_ts) AS last_txn_ts
    FROM transactions t
    CROSS JOIN params p
    WHERE t.txn_ts < p.as_of
    GROUP BY t.customer_id
),
support AS (
    SELECT s.customer_id,
           COUNT_IF(s.event_ts >= DATEADD(day, -90, p.as_of)) AS tickets_90d,
           COUNT_IF(s.event_ts >= DATEADD(day, -90, p.as_of)
                    AND s.event_type = 'complaint') AS complaints_90d,
           COUNT_IF(s.event_ts >= DATEADD(day, -90, p.as_of) AND s.severity >= 3)
               AS high_severity_90d,
           COUNT_IF(NOT s.resolved) AS unresolved_tickets,
           MAX(s.event_ts) AS last_ticket_ts
    FROM support_events s
    CROSS JOIN params p
    WHERE s.event_ts < p.as_of
    GROUP BY s.customer_id
)
SELECT
    a.customer_id,
    DATEDIFF(day, a.signup_date, a.as_of) AS tenure_days,
    a.age,
    CAST(a.monthly_fee AS DOUBLE) AS monthly_fee,
    CASE a.plan WHEN 'basic' THEN 1 WHEN 'plus' THEN 2 ELSE 3 END AS plan_tier,
    IFF(a.acquisition_channel = 'promo', 1, 0) AS is_promo_acquired,
    CASE a.region WHEN 'north' THEN 1 WHEN 'south' THEN 2 WHEN 'east' THEN 3 ELSE 4 END
        AS region_code,
    COALESCE(r.txn_count_30d, 0) AS txn_count_30d,
    COALESCE(r.txn_count_90d, 0) AS txn_count_90d,
    CAST(COALESCE(r.spend_30d, 0) AS DOUBLE) AS spend_30d,
    CAST(COALESCE(r.spend_90d, 0) AS DOUBLE) AS spend_90d,
    CAST(r.spend_30d / NULLIF(r.spend_90d / 3, 0) AS DOUBLE) AS spend_trend,
    CAST(r.avg_basket_90d AS DOUBLE) AS avg_basket_90d,
    CAST(r.online_share_90d AS DOUBLE) AS online_share_90d,
    DATEDIFF(day, l.last_txn_ts, a.as_of) AS days_since_last_txn,
    COALESCE(s.tickets_90d, 0) AS tickets_90d,
    COALESCE(s.complaints_90d, 0) AS complaints_90d,
    COALESCE(s.high_severity_90d, 0) AS high_severity_90d,
    COALESCE(s.unresolved_tickets, 0) AS unresolved_tickets,
    DATEDIFF(day, s.last_ticket_ts, a.as_of) AS days_since_last_ticket,
    IFF(a.cancel_date IS NOT NULL
        AND a.cancel_date < DATEADD(day, a.label_days, a.as_of), 1, 0) AS churned
FROM active a
LEFT JOIN txn_recent r ON r.customer_id = a.customer_id
LEFT JOIN txn_last l ON l.customer_id = a.customer_id
LEFT JOIN support s ON s.customer_id = a.customer_id
ORDER BY a.customer_id
