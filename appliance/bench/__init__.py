"""`appliance bench`: models and pipeline measured on a corpus the bench builds itself."""
