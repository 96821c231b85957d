"""Reading a Hugging Face checkpoint: its files and hash, its weights tensor by tensor."""
