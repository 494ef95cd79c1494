"""Result reports (HTML + PNG) from a SqliteMonitor database."""
