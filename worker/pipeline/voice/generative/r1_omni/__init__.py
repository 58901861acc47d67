"""The released R1-Omni / HumanOmni-0.5B checkpoint in this project's own code: module tree (`layout`), tower
weights (`weights`) and the backend (`model`)."""
