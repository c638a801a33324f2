// wsgate client (to be written)
