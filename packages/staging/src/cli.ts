console.log('xstage: placeholder');
