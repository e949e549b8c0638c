"""HTTP and cron intake: turn outside signals into CloudEvents on the bus."""
