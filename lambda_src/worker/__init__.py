"""The worker Lambda: fetch postings, resolve their FSAs, publish one alert each."""
