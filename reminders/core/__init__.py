"""The pure core: protocols, schedules, clocks, rendering and the SMS alphabet. Nothing here
reads the environment, a database or a network; every decision can be tested directly."""
