"""The AWS connector's shipped price catalog (`prices.csv`) and the script that rebuilds it."""
