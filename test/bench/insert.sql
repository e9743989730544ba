INSERT INTO bench_ceiling (v) VALUES (1);
