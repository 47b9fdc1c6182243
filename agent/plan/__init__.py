"""plan(): cluster state + config -> desired state, with every refusal and its reason. Pure."""
